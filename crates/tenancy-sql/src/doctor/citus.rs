//! The Citus readiness report (SPEC G2).
