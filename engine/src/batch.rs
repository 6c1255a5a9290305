//! Record batch v2 validation (filled in next).
