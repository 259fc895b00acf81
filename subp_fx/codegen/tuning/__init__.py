"""Building one block-sparse conv kernel on its own (``build``): for tests, benchmarks and timing
register tiles at compile time, with the tuning log (``log``) that keeps those timings and the
assembly checks (``asm``) that drop tiles whose hot loop spills."""
