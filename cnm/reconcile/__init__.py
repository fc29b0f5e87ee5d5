"""Start-up reconcile: the kernel compared with the store, what a crash left removed.

decide   pure decisions over a snapshot (what is an orphan, repair or release)
facts    the snapshot, read from the store and (through cnm.osl) the kernel
sweep    the decisions carried out, each said once in the log
"""
