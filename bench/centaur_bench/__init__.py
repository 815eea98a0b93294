"""Benchmarks centaur-gateway against a direct connection, hudsucker, squid ssl-bump and
mitmproxy, on this machine, in one run, and writes the table (BENCHMARKS.md) and JSON.

  bench/run               the full suite (about 35 minutes on 2 cores); writes BENCHMARKS.md
  bench/run --quick       a developer's check in under 2 minutes (a few scenarios, one round)
  bench/run --smoke       CI: the suite starts, measures once, and produces a table
  bench/run --quick --baseline OLD-BINARY
                          this build against another build, in alternation, in one run

Every contender serves the same origin (bench-origin, HTTPS, HTTP/1.1 and HTTP/2) through
loopback. Scenarios run contender after contender (A B C A B C ...) for several rounds;
the table gives medians with min-max. Client, contender and origin share the machine's
cores, so read ratios, not absolutes. See bench/README.md.
"""
