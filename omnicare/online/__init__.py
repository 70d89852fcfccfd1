"""Online only (issue 13 item 4): the device keeps no patient data, and the server answers for it.

``services.device_policy`` is the per-role "shared workstation: no offline data" policy shipped at sign-in;
``api`` serves the decision table (pyclient.storage_mode) and, for a browser whose Python runtime could not
start, the reduced screens' view models and validation run here with the same pyclient functions.
"""
