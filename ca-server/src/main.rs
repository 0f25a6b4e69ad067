//! `devicetrust-ca`: see [`ca_server::cli`] for the commands and exit codes.

fn main() -> std::process::ExitCode {
    ca_server::cli::main()
}
