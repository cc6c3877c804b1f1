import sys

from ml_service.cli import main

sys.exit(main())
