//! The reference reading of NetworkPolicy: whether one connection is
//! allowed, straight from the API reference, with no kernel in it.
