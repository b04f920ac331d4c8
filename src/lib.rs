//! Shared helpers for the workspace-level examples, tests and benches.
