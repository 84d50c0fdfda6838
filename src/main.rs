fn main() -> std::process::ExitCode {
    modelwatch::cli::main()
}
