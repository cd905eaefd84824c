# IPython configuration of the fibsem-ophyd profile collection.
#
# Start with ``ipython --profile-dir=profile_collection`` (from the repository root); the
# startup/NN-*.py files then run in order. The queue server's worker runs the same startup
# files (``start-re-manager --startup-dir profile_collection/startup``) without IPython.

c = get_config()  # noqa: F821  (provided by IPython when it loads this file)

# Keep the command history out of the repository checkout (and safe with many sessions).
c.HistoryManager.hist_file = ":memory:"
