from headless.cli import main

if __name__ == "__main__":  # guard: worker processes (spawn) re-import this module
    raise SystemExit(main())
