//! Prints the Python SDK's generated constants module (`rapha_protocol::python::module`).

fn main() {
    print!("{}", rapha_protocol::python::module());
}
