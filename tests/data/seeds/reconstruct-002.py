#!/usr/bin/env python3
# How the *-0.8.cfg and other 002-derived seeds were rebuilt from the flattened seed 002.
# Run from this directory with SEEDS=/path/to/shared/seeds. Asserts only whitespace changes.
"""Restore line breaks in a flattened SER script from 002: break before ' #' (a comment
start), resume code at the given markers, and break after ; { } in code."""
import os, re, sys
def recon(flat, markers, header):
    flat = flat.rstrip()
    if flat.endswith(' |'): flat = flat[:-2]
    # marker positions, searched in order
    pos, cuts = 0, []
    for m in markers:
        i = flat.find(m, pos)
        assert i >= 0, m
        cuts.append(i); pos = i + 1
    cuts = set(cuts)
    out, state, i = [], 'code', 0
    while i < len(flat):
        c = flat[i]
        if i in cuts:
            while out and out[-1] == ' ': out.pop()
            out.append('\n'); state = 'code'
            if c == ' ': i += 1; continue
        if state == 'str':
            out.append(c)
            if c == '\\': out.append(flat[i+1]); i += 2; continue
            if c == '"': state = 'code'
            i += 1; continue
        if c == '#' and i > 0 and flat[i-1] == ' ':
            while out and out[-1] == ' ': out.pop()
            if out and out[-1] != '\n': out.append('\n')
            state = 'comment'; out.append(c); i += 1; continue
        if state == 'code' and c == '#':
            state = 'comment'
        if state == 'code' and c == '/' and flat[i+1] == '*':
            j = flat.index('*/', i) + 2; out.append(flat[i:j]); i = j; continue
        if state == 'code' and c == '"':
            state = 'str'
        out.append(c)
        if state == 'code' and c in ';{}':
            # keep `};`, `} else`, and `;` right after `)`-less tokens together
            rest = flat[i+1:]
            if not re.match(r'\s*(;|else\b)', rest) and not re.match(r'\s*(#|$)', rest):
                out.append('\n')
                while i + 1 < len(flat) and flat[i+1] == ' ': i += 1
        i += 1
    text = ''.join(out)
    text = '\n'.join(l.rstrip() for l in text.split('\n')).strip('\n') + '\n'
    # only whitespace may differ from the flattened original
    assert re.sub(r'\s+', ' ', text).strip() == re.sub(r'\s+', ' ', flat).strip()
    return header + text
L = open(os.environ.get('SEEDS', '../../../../shared/seeds') + '/002_ca8bbb779546902d.txt').read().split('\n')
OUT = './'
def hdr(ex, title):
    return ("# Reconstructed from seed 002 (SER 0.8 admin guide), %s \"%s\".\n"
            "# The seed flattened the script onto one line; line breaks were restored where the\n"
            "# flattening destroyed them (comment ends, statement ends). Text otherwise unchanged.\n" % (ex, title))
def mk(name, lineno, markers, ex, title, excluded=False):
    t = recon(L[lineno-1], markers, hdr(ex, title))
    open(OUT + ('excluded/' if excluded else '') + name, 'w').write(t)

mk('default-0.8.cfg', 172, ['debug=3', 'fork=no', 'log_stderror', 'check_via=no', 'dns=no', 'rev_dns=no', 'port=5060',
   'children=4', 'fifo=', 'listen=', 'loadmodule "modules/sl', 'loadmodule "modules/tm', 'loadmodule "modules/rr',
   'loadmodule "modules/maxfwd', 'loadmodule "modules/usrloc', 'loadmodule "modules/registrar',
   'modparam("usrloc", "db_mode", 0)', 'route{', 'if (!mf_process', 'rewriteFromRoute();', 'if (uri==myself)',
   'save("location")', 'if (!lookup("location"))', 'if (!t_relay())'],
   'Example 14', 'Default Configuration Script')
mk('uas.cfg', 177, ['loadmodule "modules/sl', 'loadmodule "modules/tm', 'route{', 'if (method=="REGISTER")',
   'if ( !t_newtran())', 'log(1, "New Transaction', 'if (uri=~"a@")'],
   'Example 15', 'Stateful UA')
mk('exec.cfg', 187, ['loadmodule "modules/exec', 'loadmodule "modules/sl', 'route{', 'if (method=="REGISTER")',
   'exec_msg(', 'if (exec_uri('], 'Example 17', 'Executing External Script')
mk('reply-route.cfg', 192, ['loadmodule "modules/sl', 'loadmodule "modules/tm', 'modparam("tm", "fr_inv_timer"',
   'modparam("tm", "fr_timer"', 'route{', 'if (method=="REGISTER")', 'seturi(', 't_on_negative("1")', 't_relay();',
   'append_branch("sip:nonsense', 't_on_negative("2")', 'append_branch("sip:foo', '}'],
   'Example 18', 'Reply Processing')
mk('gateway-acl-0.8.cfg', 246, ['loadmodule "modules/sl', 'loadmodule "modules/tm', 'loadmodule "modules/acc',
   'loadmodule "modules/rr', 'loadmodule "modules/maxfwd', 'loadmodule "modules/mysql', 'loadmodule "modules/auth',
   'modparam("auth", "db_url"', 'modparam("auth", "calculate_ha1"', 'modparam("auth", "password_column"',
   'modparam("acc", "log_level"', 'modparam("acc", "acc_flag"', 'route{', 'if (!mf_process', '/* Do strict',
   'rewriteFromRoute();', '/* record-route', 'if (!uri=~', 'setflag(1);', 'if ( is_user_in', '| uri=~"sip:[79]',
   '| uri=~"sip:98', 'log("gateway-originated', 'if (!proxy_authorize', '"subscriber" /* table name */)',
   'if (method=="INVITE") {', 'if (uri=~"sip:0[1-9]', '} else if (uri=~"sip:00', '} else if (uri=~"sip:000',
   '} else {', '}; # authorized', 'rewritehostport(', 'if (!t_relay())'],
   'Example 6 of the admin chapter', 'Script for Gateway Access Control')
mk('accounting-0.8.cfg', 253, ['loadmodule "modules/tm', 'loadmodule "modules/acc', 'loadmodule "modules/sl',
   'loadmodule "modules/maxfwd', 'modparam("acc", "log_level"', 'modparam("acc", "acc_flag"', 'route{',
   'if (!mf_process', 'if (uri=~"sip:', 'if (!t_relay())'],
   'Example 7 of the admin chapter', 'Configuration with Enabled Accounting')
mk('replication.cfg', 259, ['debug=3', 'fork=no', 'log_stderror=yes', 'loadmodule "modules/mysql', 'loadmodule "modules/sl',
   'loadmodule "modules/tm', 'loadmodule "modules/maxfwd', 'loadmodule "modules/usrloc', 'loadmodule "modules/registrar',
   'loadmodule "modules/auth', 'modparam("auth", "secret"', 'route{', 'if (!mf_process', 'if (uri==myself)',
   'if (!www_authorize', 'save("location")', 'if (!src_ip==', 'log("non-REGISTER'],
   'Example 8 of the admin chapter', 'Script for Replication of User Contacts')
mk('myself-aliases.cfg', 95, ['alias="foo.bar"', 'alias="sales.foo.bar"', 'route[0]', 'log(1,"request for served domain")',
   '} else {', 'log(1,"request for outbound domain")', 't_relay();'],
   'Example 5 of the introduction', 'Use of uri==myself Expression')
mk('module-params.cfg', 153, ['loadmodule "modules/sl', 'loadmodule "modules/mysql', 'loadmodule "modules/auth',
   'modparam("auth"', 'route{', '"subscriber" /* table name */'],
   'Example 13 of the introduction', 'Module Parameters')
mk('route-blocks.cfg', 325, ['route(2);'], 'Example 1 of the reference chapter', 'route')
