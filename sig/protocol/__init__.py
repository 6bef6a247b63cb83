"""The wire protocol: frames, messages and CBOR data (PROTOCOL.md). No I/O."""
