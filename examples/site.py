"""One site of a deployed federation: contribute an update to a round, print the average.

    SECUREFL_IDENTITY_PASSPHRASE=... python examples/site.py --aggregator aggregator.example:7000 \\
        --id hospital-a --dir hospital-a/ --keyholder-fingerprint 3f9c...

`--dir` holds what enrolment gave this site: `<id>.identity.json`, `<id>.tls.key`,
`<id>.tls.crt` and `federation.json`. The update here is a constant vector (`--value`), so the
printed average is easy to check; a training loop passes its model's state_dict instead."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import securefl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aggregator", required=True, help="host:port of the aggregator")
    parser.add_argument("--id", required=True, help="this site's id")
    parser.add_argument("--dir", type=Path, required=True, help="directory of this site's files")
    parser.add_argument("--keyholder-fingerprint", help="ckks: printed by `securefl keyholder serve`, pinned out of band")
    parser.add_argument("--value", type=float, default=1.0)
    parser.add_argument("--weight", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--round", dest="round_id", help="round id (default: join the open round)")
    args = parser.parse_args()

    federation = securefl.Federation.load(args.dir / "federation.json")
    client = securefl.connect(
        args.aggregator,
        identity=securefl.Identity.load(args.dir / f"{args.id}.identity.json"),
        federation=federation,
        tls=securefl.TlsConfig.from_files(args.dir / f"{args.id}.tls.crt", args.dir / f"{args.id}.tls.key",
                                          federation.ca_certificate),
        keyholder_fingerprint=args.keyholder_fingerprint,
    )
    with client:
        average = client.aggregate(np.full(args.size, args.value), weight=args.weight, round_id=args.round_id)
    print(f"{args.id}: round {client.last_stats.round_id} average {float(average.mean()):.6f}")


if __name__ == "__main__":
    main()
