"""CI: audit the image's pinned dependencies (constraints.txt) with pip-audit.

Exit 1 when a known vulnerability is found. When the vulnerability service cannot be reached
(only the package index may be reachable from CI), say so plainly and which packages went
unaudited, and exit 0: an unreachable service is not a finding, but it is never reported as
"no known vulnerabilities" either.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    command = [sys.executable, "-m", "pip_audit", "--no-deps", "--disable-pip",
               "--progress-spinner", "off", "-f", "json", "-r", str(ROOT / "constraints.txt")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        print(f"pip-audit: could not audit (exit {done.returncode}; the vulnerability service "
              f"is probably unreachable from here); NOT audited:\n{tail}")
        return 0
    dependencies = report.get("dependencies", [])
    found = [(dep["name"], dep.get("version", "?"), vuln)
             for dep in dependencies for vuln in dep.get("vulns", [])]
    for name, version, vuln in found:
        fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
        print(f"pip-audit: {name} {version}: {vuln.get('id')} (fixed in {fixed})")
    if found:
        print(f"pip-audit: {len(found)} known vulnerabilities in constraints.txt: raise the "
              "floors in pyproject.toml and regenerate constraints.txt")
        return 1
    skipped = [dep for dep in dependencies if "skip_reason" in dep]
    audited = len(dependencies) - len(skipped)
    if skipped:
        print(f"pip-audit: the vulnerability service did not answer for {len(skipped)} of "
              f"{len(dependencies)} packages, which were NOT audited (e.g. "
              f"{skipped[0]['skip_reason']}); {audited} audited, none vulnerable")
    else:
        print(f"pip-audit: {audited} packages audited, no known vulnerabilities")
    return 0


if __name__ == "__main__":
    sys.exit(main())
