"""The numbers and names PROTOCOL.md fixes, each defined here and nowhere else.

Every other module (codec, gateway, clients, CLI, carriers) imports them from
here, so that changing one is a one-line change that cannot leave a second
copy behind.
"""

from __future__ import annotations

#: Protocol version carried in HELLO and WELCOME.
PROTOCOL_VERSION = 1
#: Bits 0-5 of the header byte: the message type.
TYPE_MASK = 0x3F
#: Header flag: a signed body (counter after the header, tag at the end; Feature.AUTH).
FLAG_AUTH = 0x40
#: Header flag: a sequence number follows the header byte (Feature.RELIABLE, PROTOCOL.md section 5).
FLAG_SEQ = 0x80
#: LISTEN ``options`` bits 0-1: the delivery policy when the listener's link is behind.
POLICY_MASK = 0x03
#: Policy ``drop``: above the link's high-water mark, drop the EVENT and count it.
POLICY_DROP = 0
#: Policy ``latest``: keep only the newest pending value per (sender, event), count the replaced.
POLICY_LATEST = 1
#: Policy ``block``: stop reading the TCP senders that feed the listener until it catches up.
POLICY_BLOCK = 2
#: LISTEN ``options`` bit 2: do not deliver events triggered on the listener's own link.
LISTEN_NO_LOCAL = 0x04
#: Every LISTEN ``options`` bit version 1 defines; any other bit is MALFORMED.
LISTEN_OPTIONS_MASK = POLICY_MASK | LISTEN_NO_LOCAL
#: Longest name (sender, event, method, peer) in UTF-8 bytes.
MAX_NAME = 255
#: Largest value a varint may carry (5 bytes of LEB128 at most).
MAX_VARINT = 0xFFFFFFFF
#: Largest body the protocol can express; a peer may announce a smaller one.
MAX_BODY_LIMIT = 65535
#: Body limit a gateway uses on TCP links unless configured otherwise.
DEFAULT_MAX_BODY = 65535
#: The gateway's own sender: its methods ``senders``, ``links``, ``stats``.
GATEWAY_SENDER = "$gateway"
#: TCP port a gateway listens on, and clients connect to, unless told otherwise.
DEFAULT_PORT = 3000
#: RETAINED ``flags`` bit 0: the value's sender is not connected now.
RETAINED_STALE = 0x01
