//! burn 0.22 integration (work in progress).
