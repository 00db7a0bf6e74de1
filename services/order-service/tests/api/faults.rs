//! Faults with real processes, real PostgreSQL and real HTTP: outages, restarts, shutdown.
