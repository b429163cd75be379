//! anvil through the shared rapha-testkit harness. Its start and restart use a blocking HTTP
//! client, so they run on a scoped plain thread, outside the test's async runtime.

pub use rapha_testkit::services::{Anvil, AnvilOptions};

pub fn start(opts: AnvilOptions) -> Option<Anvil> {
    std::thread::scope(|s| {
        s.spawn(|| rapha_testkit::require!(Anvil::start(opts)))
            .join()
            .unwrap()
    })
}

pub fn restart(anvil: &mut Anvil) {
    std::thread::scope(|s| s.spawn(|| anvil.restart().unwrap()).join().unwrap());
}
