//! Integration tests for rapha-trainer-sdk: the SDK against a scripted peer over a real socket
//! pair, bad frames from a hostile node, and output round trips.

mod sdk;
