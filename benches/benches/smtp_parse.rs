//! Command and reply parsing: a handful of lines per message, so their cost
//! per octet bounds how many sessions a core can serve.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_benches::corpus;
use sluice_smtp::{Command, Reply};

fn command_parse(c: &mut Criterion) {
    let lines = corpus::command_lines();
    // Check the corpus is all valid once, so the bench does not measure
    // the error path by accident.
    for line in &lines {
        if let Err(e) = Command::parse(line) {
            panic!("{}: {e:?}", String::from_utf8_lossy(line));
        }
    }
    let bytes: usize = lines.iter().map(|l| l.len() + 2).sum();
    let mut group = c.benchmark_group("smtp_parse");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("command_mix", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(Command::parse(black_box(line)));
            }
        })
    });
    group.throughput(Throughput::Bytes(corpus::EHLO_REPLY.len() as u64));
    group.bench_function("ehlo_reply", |b| {
        b.iter(|| black_box(Reply::parse(black_box(corpus::EHLO_REPLY))))
    });
    group.finish();
}

criterion_group!(benches, command_parse);
criterion_main!(benches);
