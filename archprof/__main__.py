"""`python -m archprof` and the `archprof` command's entry point. Importing the CLI (Typer,
Rich) takes a tenth of a second: Ctrl-C then is said on one line too, exit 130, as in a
command (`archprof.cli.streams.interrupted`), not a traceback from inside an import."""

import sys


def run() -> None:
    try:
        from archprof.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted (Ctrl-C)\n")
        raise SystemExit(130) from None
    main()


if __name__ == "__main__":
    run()
