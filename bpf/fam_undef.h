/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* fam_undef.h: ends one family's instantiation of a *_fam.h template
 * (conn_fam.h, newflow_fam.h). No include guard, on purpose. */
#undef FAM_FN
#undef FAM_NAME
#undef FAM_KEY
#undef FAM_VAL
#undef FAM_EMB
#undef FAM_EST
#undef FAM_SVC_KEY
#undef FAM_SERVICES
#undef FAM_V6
#undef FAM_REAL_OK
#undef FAM_REAL_ADDR
#undef FAM_SADDR
#undef FAM_DADDR
#undef FAM_PICK_FLOW
#undef FAM_FORWARD
#undef FAM_ADDR_SET
#undef FAM_SYNPROXY
#undef FAM_CONN
#undef FAM_IP_LEN
#undef FAM_NAT_REWRITE
#undef FAM_TOA_LEN
#undef FAM_TIMERS
#undef FAM_AGE
