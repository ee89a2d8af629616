//! ser
