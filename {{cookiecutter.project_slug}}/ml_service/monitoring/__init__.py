"""Monitoring: the scoring servers' prediction log and the `monitor` drift check.

prediction_log.py says where each target's servers record their requests (imported by the
targets, so it stays light); records.py reads the records back (log files here, Log
Analytics for ACI and AKS: log_analytics.py); drift.py runs the statistical tests;
page.py renders the HTML report; check.py ties them together for the `monitor` verb.
"""
