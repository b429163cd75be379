//! OCI trainer images, DSSE / in-toto signatures and the hospital trust store.
//!
//! Enforces **I5** (only signed code runs): a bundle runs only if its DSSE signature verifies
//! against the hospital's trust store and every image blob matches the digest that was signed.
