"""What the registry does, one function per operation: each opens a transaction, reads and
writes through ``repository.py``, asks ``domain/`` for every rule and announces changes
through ``outbox.py``."""
