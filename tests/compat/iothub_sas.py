"""IoT Hub shared access signatures and connection strings, written independently of the hub.

The tests sign their own tokens so they check the hub against the documented scheme rather than
against the hub's own code: sig = urlquote(b64(HMAC-SHA256(b64decode(key), sr + "\\n" + se))).
"""

import base64
import hashlib
import hmac
import time
from urllib.parse import quote, quote_plus


def parse_connection_string(text):
    """`A=1;B=x=y` -> {"A": "1", "B": "x=y"} (keys are base64 and may end in '=')."""
    parts = {}
    for field in text.split(";"):
        if field:
            key, _, value = field.partition("=")
            parts[key] = value
    return parts


def sas_token(resource, key_b64, policy=None, ttl_seconds=3600, expiry=None, sig_safe="/"):
    """A `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]` for `resource` (not yet url-encoded).

    The service SDK leaves '/' in the signature unencoded (sig_safe="/"), the device SDK encodes it
    (sig_safe=""); a hub must accept both.
    """
    se = int(expiry if expiry is not None else time.time() + ttl_seconds)
    sr = quote_plus(resource)
    digest = hmac.new(base64.b64decode(key_b64), f"{sr}\n{se}".encode(), hashlib.sha256).digest()
    sig = quote(base64.b64encode(digest).decode(), safe=sig_safe)
    token = f"SharedAccessSignature sr={sr}&sig={sig}&se={se}"
    if policy:
        token += f"&skn={policy}"
    return token


def random_key():
    """A fresh 32-byte base64 key, like the ones IoT Hub generates."""
    import os

    return base64.b64encode(os.urandom(32)).decode()
