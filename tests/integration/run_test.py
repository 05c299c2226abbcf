"""Runs one integration test file for ctest and says honestly what ran.

  python3 run_test.py test_NAME.py [unittest options and test names]

Python's unittest exits 0 when every test method skipped, so a file that ran
nothing would show as Passed. This runner exits:
  1   a test failed or errored (or the file did not load);
  77  no test method ran: every one skipped, or none was found (ctest's
      SKIP_RETURN_CODE, set on every test: the summary lists it Not Run);
  0   otherwise.
It always ends with one line counting the methods that ran and that skipped,
and names each skipped method with its reason.
"""

import argparse
import importlib.util
import os
import sys
import unittest

SKIPPED_EVERYTHING = 77


def load(path):
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("script", help="a test_*.py file")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("names", nargs="*",
                        help="tests to run (Class or Class.method); "
                        "default all")
    args = parser.parse_args()
    try:
        module = load(args.script)
    except Exception:
        import traceback
        traceback.print_exc()
        print("run_test: %s did not load" % args.script, file=sys.stderr)
        return 1
    loader = unittest.defaultTestLoader
    if args.names:
        suite = loader.loadTestsFromNames(args.names, module)
    else:
        suite = loader.loadTestsFromModule(module)
    result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1,
                                     stream=sys.stderr).run(suite)
    # A method counts as skipped when it skipped as a whole; a skipped
    # subTest or a class whose setUpClass skipped is named, not counted (the
    # latter's methods never started, so testsRun does not hold them).
    skipped = sum(1 for test, _ in result.skipped
                  if isinstance(test, unittest.TestCase) and
                  not type(test).__name__ == "_SubTest")
    ran = result.testsRun - skipped
    for test, reason in result.skipped:
        print("skipped: %s: %s" % (test.id(), reason), file=sys.stderr)
    print("%s: %d test method(s) ran, %d skipped, %d failed" %
          (os.path.basename(args.script), ran, skipped,
           len(result.failures) + len(result.errors) +
           len(result.unexpectedSuccesses)), file=sys.stderr)
    if not result.wasSuccessful():
        return 1
    if ran == 0:
        print("%s: nothing ran: reported as Not Run (exit %d)" %
              (os.path.basename(args.script), SKIPPED_EVERYTHING),
              file=sys.stderr)
        return SKIPPED_EVERYTHING
    return 0


if __name__ == "__main__":
    sys.exit(main())
