//! Integration tests of the vote service (filled in below).
