"""The protocol version. Bump it only for changes an old client would misread."""

PROTOCOL_VERSION = 1
