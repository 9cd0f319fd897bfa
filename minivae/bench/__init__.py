"""``minivae bench``: the benchmark harness (:mod:`.harness`), its cases (:mod:`.cases`)
and the optional peer libraries they compare against (:mod:`.peers`)."""
