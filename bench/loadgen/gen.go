package loadgen

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type gen_cfg -type sink_count -type loop_cfg -type loop_slot -type loop_tag -type loop_counter -type loop_const -type ref_svc_key -type ref_conn_key -type ref_conn loadgen ../../bpf/loadgen.bpf.c
