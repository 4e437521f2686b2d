"""SoftHSM's raw signing rate through python-pkcs11: one process, one session, ECDSA over a
prehashed digest in a loop. The bound of the batch case.

    python -m bench.hsm_rate MODULE TOKEN_LABEL KEY_LABEL PIN_FILE SECONDS

Logs in, prints "ready", waits for a line on stdin (so that several processes start together),
signs for SECONDS and prints "SIGNED <count> <seconds>".

Processes, not threads: python-pkcs11 calls C_Initialize(NULL), which tells the module that no
two threads call it at once, and SoftHSM then drops its locks (two threads signing at once
corrupt its heap: seen here). One process's rate is the bound of one service process.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Mechanism, ObjectClass


def main() -> None:
    module, label, key_label, pin_file, seconds = sys.argv[1:6]
    digest = hashlib.sha256(b"raw").digest()
    session: Any = None
    library = pkcs11.lib(module)
    for attempt in range(10):  # another process reading or writing the token's files: a retry
        try:
            token = library.get_token(token_label=label)
            session = token.open(user_pin=Path(pin_file).read_text())
            break
        except (pkcs11.exceptions.GeneralError, pkcs11.exceptions.NoSuchToken):
            if attempt == 9:
                raise
            time.sleep(0.05 * (attempt + 1))
            library.reinitialize()  # SoftHSM reads its token folder when it initialises
    with session:
        key: Any = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_label)
        key.sign(digest, mechanism=Mechanism.ECDSA)
        print("ready", flush=True)
        sys.stdin.readline()
        done, start = 0, time.perf_counter()
        end = start + float(seconds)
        while time.perf_counter() < end:
            key.sign(digest, mechanism=Mechanism.ECDSA)
            done += 1
        print(f"SIGNED {done} {time.perf_counter() - start:.6f}", flush=True)


if __name__ == "__main__":
    main()
