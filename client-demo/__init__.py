"""Clients for SeeAloud: the Python replay client (and, later, the phone web page).

Installed as the package ``seealoud_client`` (the folder is ``client-demo/``).
"""
