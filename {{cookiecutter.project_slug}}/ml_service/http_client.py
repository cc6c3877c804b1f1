"""HTTP requests from the CLI to scoring servers and health endpoints: http(s) only."""
import urllib.parse
import urllib.request

from ml_service.errors import MlopsError

ALLOWED_SCHEMES = ("http", "https")


def urlopen(request, timeout):
    """`urllib.request.urlopen` for an http or https URL (a string or a Request).

    The URL comes from a target: a local port, or the scoring URI ACI or AKS reports.
    urllib would also open `file:` and `ftp:` URLs, reading local files or reaching
    another kind of server, so any other scheme is refused before anything is opened.
    """
    url = request.full_url if isinstance(request, urllib.request.Request) else str(request)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise MlopsError(
            f"Refusing to open {url!r}: a scoring server is reached over http or https only.",
            "Check the target's scoring URI: the port in mlops.toml for a local target, or "
            "what `az ml`/`kubectl` report for an Azure one.")
    # Bandit (B310) flags every urlopen call: the scheme was checked above.
    return urllib.request.urlopen(request, timeout=timeout)  # nosec B310
