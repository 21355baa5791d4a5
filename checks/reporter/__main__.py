"""`python -m checks.reporter`: the same as the pg-role-reporter executable."""

from checks.reporter.cli import main

main()
