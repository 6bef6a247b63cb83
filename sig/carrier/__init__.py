"""The seed's carrier module names (``sig.carrier.tcpclient``), kept for its API."""
