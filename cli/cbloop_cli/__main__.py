"""`python -m cbloop_cli`: the `cbloop` command, run by a given interpreter."""

from cbloop_cli.main import main

if __name__ == "__main__":
    main()
