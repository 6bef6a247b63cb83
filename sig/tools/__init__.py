"""Tools built on the routers: the ``sig`` command line and the device emulator."""
