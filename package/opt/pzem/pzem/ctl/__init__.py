"""pzemctl: the commissioning tool for the PZEM meters on one RS-485 port.

cli.py reads the command line and runs one command; every other module does one job.
"""
