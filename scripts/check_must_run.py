#!/usr/bin/env python3
"""Checks a ctest run against tests/must_run.txt: every test marked "must"
for the platform ran (not Not Run, not missing), and every test that was
registered is listed there, on a platform where it belongs.

  scripts/check_must_run.py <ctest --output-junit file> <linux|windows>

Exit 0 when it holds; 1 with one line per problem (on stderr) otherwise.
"""

import os
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICY_FILE = os.path.join(ROOT, "tests", "must_run.txt")
PLATFORMS = ("linux", "windows")


def policies(platform):
    column = 1 + PLATFORMS.index(platform)
    table = {}
    with open(POLICY_FILE) as f:
        for number, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 3 or fields[column] not in ("must", "may", "-"):
                sys.exit("%s:%d: expected 'test linux windows' with must, may "
                         "or -: %r" % (POLICY_FILE, number, line.rstrip()))
            table[fields[0]] = fields[column]
    return table


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in PLATFORMS:
        sys.exit("usage: %s <junit.xml> <%s>" % (sys.argv[0],
                                                  "|".join(PLATFORMS)))
    junit, platform = sys.argv[1], sys.argv[2]
    table = policies(platform)
    try:
        cases = ET.parse(junit).getroot().iter("testcase")
    except (OSError, ET.ParseError) as error:
        sys.exit("check_must_run: cannot read ctest's report %s: %s" %
                 (junit, error))
    statuses = {case.get("name"): case.get("status") for case in cases}
    problems = []
    for name, status in sorted(statuses.items()):
        policy = table.get(name)
        if policy is None:
            problems.append("%s ran but is not listed in %s: add a row" %
                            (name, POLICY_FILE))
        elif policy == "-":
            problems.append("%s is registered on %s although %s says it "
                            "does not belong there" %
                            (name, platform, POLICY_FILE))
        elif policy == "must" and status != "run" and status != "fail":
            problems.append("%s must run on %s but did not (%s): every test "
                            "method skipped; its output names why" %
                            (name, platform, status))
    for name, policy in sorted(table.items()):
        if policy == "must" and name not in statuses:
            problems.append("%s must run on %s but is not in the run (not "
                            "registered, or filtered out)" % (name, platform))
    ran = sum(1 for s in statuses.values() if s == "run")
    print("check_must_run (%s): %d test(s) ran, %d did not; %d problem(s)" %
          (platform, ran, len(statuses) - ran, len(problems)),
          file=sys.stderr)
    for problem in problems:
        print("  " + problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
