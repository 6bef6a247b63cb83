"""Byte transports that carry sig frames: TCP and UART. They know nothing of routing."""
