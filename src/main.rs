//! The `zkvault` binary; the commands live in `src/cli/`.

mod cli;

fn main() {
    cli::main()
}
