"""Sends every operation of a service's OpenAPI document once without a token.

An operation whose `security` does not allow anonymous access (an empty
requirement) must answer 401 with a `WWW-Authenticate: Bearer` challenge; every
other operation must not answer 401. Exits 1 listing the operations that broke
the rule.

    python3 scripts/anonymous-check.py http://127.0.0.1:8081
"""

import json
import sys
import urllib.error
import urllib.request


def send(base, method, path):
    url = base + path.replace("{id}", "1")
    data = b"{}" if method in ("post", "put") else None
    request = urllib.request.Request(url, data=data, method=method.upper())
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers


def main(base):
    with urllib.request.urlopen(base + "/openapi.json", timeout=10) as response:
        spec = json.load(response)
    broken, checked = [], 0
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "delete"):
                continue
            security = operation.get("security")
            protected = bool(security) and {} not in security
            status, headers = send(base, method, path)
            checked += 1
            challenge = headers.get("WWW-Authenticate", "")
            if protected and (status != 401 or not challenge.startswith("Bearer")):
                broken.append(f"{method.upper()} {path}: {status} {challenge!r}, expected 401 Bearer")
            if not protected and status == 401:
                broken.append(f"{method.upper()} {path}: 401 on a public operation")
    for line in broken:
        print(line, file=sys.stderr)
    print(f"{checked} operations checked without a token, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1].rstrip("/")))
