"""Fault soak: round trips against a real Postfix + Dovecot while faults come and go at random.

    python -m bench.soak --roundtrips 2000 --targets 8

The soak itself lives in :mod:`testing.soak`, where the test suite runs a short version.
"""

from testing.soak import main

if __name__ == "__main__":
    raise SystemExit(main())
