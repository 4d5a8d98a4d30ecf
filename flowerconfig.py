"""Flower's settings: `celery -A tasks flower` reads this file from the working directory.

Address, port and credentials come from the environment through `config` (FLOWER_ADDRESS,
FLOWER_PORT, FLOWER_BASIC_AUTH), so `.env` works in development as it does for the rest.
Flower shows every task's arguments and can revoke tasks and stop workers, so it refuses
to listen beyond the loopback interface without basic auth.
"""

import ipaddress
import sys

from config import get_settings

_settings = get_settings()


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # "" (every interface) or a host name
        return False


address = _settings.flower_address
port = _settings.flower_port

if _settings.flower_basic_auth is not None:
    _credentials = _settings.flower_basic_auth.get_secret_value()
    if ":" not in _credentials:
        sys.exit("FLOWER_BASIC_AUTH must be user:password")
    basic_auth = [_credentials]
elif not _loopback(address):
    sys.exit(
        f"Flower refuses to listen on {address or 'every interface'!r} without FLOWER_BASIC_AUTH "
        "(user:password); set it, or FLOWER_ADDRESS=127.0.0.1 for a local Flower"
    )
