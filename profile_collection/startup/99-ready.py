"""Report what was set up (IPython only; the worker logs stay quiet)."""

if not RE_WORKER:  # noqa: F821  (00-base.py)
    _where = FIBSEM_ENV["tiled_uri"] or str(session.data_dir)  # noqa: F821
    print(
        f"fibsem-ophyd: backend={type(session.backend).__name__} "  # noqa: F821
        f"catalog={_where} | RE, microscope, stage, electron_beam, ion_beam, sem, fib, "
        "chamber, catalog, bec, bp/bps/bpp and the fibsem plans are ready"
    )
    del _where
