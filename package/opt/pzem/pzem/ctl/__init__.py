"""pzemctl: the commissioning tool for PZEM meters on one RS-485 port (scan, info, set-address, ...).

cli.py reads the command line and runs one command; every other module does one job.
"""
