// Package bpfobj holds the director's and the sweep's BPF objects and
// their types, generated once from bpf/ by bpf2go and exported for every
// package that reads or writes their maps (dataplane, slowpath).
package bpfobj

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type svc_key -type svc_val -type conn_key -type conn_val -type svc_key6 -type conn_key6 -type conn_val6 -type real -type iface -type real_stats -type pick_ctl -type pick_seq -type fwd_method -type conn_flag -type real_flag -type tcp_state -type stat_idx -type addr_flag -type svc_flag -type defence_flag -type defence_cfg -type seqadj -type pick_kind -type hash_pick_key -type sweep_tmpl -type tmpl_val -type laddr -type shared_const -type sync_cfg -type aging_cfg -type live_count Director ../../bpf/director.bpf.c
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type sweep_args -type sweep_count -type sweep_port -type sweep_persist -type sweep_tmpl -type reap_args -type reap_slot Sweep ../../bpf/sweep.bpf.c
