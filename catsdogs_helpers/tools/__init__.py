"""Tools no notebook needs to read: the series runner (``series``), the command-line trainer
(``trainer``), multi-GPU training (``distributed``), export (``export``) and the
``catsdogs-predict`` command (``predict``)."""
