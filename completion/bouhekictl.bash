# bash completion for bouhekictl(8). Installed in
# /usr/share/bash-completion/completions/bouhekictl; needs nothing but bash
# (tests/unit/test_completion.py keeps it in step with bouhekictl's parser).

_bouhekictl_units() {
    # Loaded units, then unit files: a policy may name a unit not running yet.
    systemctl list-units --all --full --plain --no-legend --no-pager 2>/dev/null |
        awk '{print $1}'
    systemctl list-unit-files --full --no-legend --no-pager 2>/dev/null | awk '{print $1}'
}

_bouhekictl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local commands="status reload policies stats explain check-config monitor learned suggest forget"
    local common="--json --bus --address --timeout --help"
    local cmd="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --bus | --address | --timeout) ((i++)) ;;
            -*) ;;
            *) cmd=${COMP_WORDS[i]} && break ;;
        esac
    done
    case $prev in
        --bus) mapfile -t COMPREPLY < <(compgen -W "system session" -- "$cur") && return ;;
        --address | --timeout | --comm | --uid | --gid | --count | --to) return ;;
        --ipv4-prefix | --ipv6-prefix) return ;;
        --unit) mapfile -t COMPREPLY < <(compgen -W "$(_bouhekictl_units)" -- "$cur") && return ;;
        --exe | --output) mapfile -t COMPREPLY < <(compgen -f -- "$cur") && return ;;
        --root | --units-dir) mapfile -t COMPREPLY < <(compgen -d -- "$cur") && return ;;
        --format) mapfile -t COMPREPLY < <(compgen -W "table openmetrics prometheus" -- "$cur") && return ;;
        --proto) mapfile -t COMPREPLY < <(compgen -W "tcp udp" -- "$cur") && return ;;
    esac
    if [[ -z $cmd ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$commands $common --version" -- "$cur")
        return
    fi
    local opts=$common
    case $cmd in
        stats) opts+=" --format --output" ;;
        explain) opts+=" --unit --comm --exe --uid --gid --to --proto --offline --root --units-dir" ;;
        check-config)
            opts+=" --daemon --root --units-dir"
            if [[ $cur != -* ]]; then
                mapfile -t COMPREPLY < <(compgen -f -- "$cur")
                return
            fi
            ;;
        monitor) opts+=" --count" ;;
        learned | suggest | forget)
            [[ $cmd == suggest ]] && opts+=" --ipv4-prefix --ipv6-prefix --output"
            if [[ $cur != -* ]]; then
                mapfile -t COMPREPLY < <(compgen -W "$(_bouhekictl_units)" -- "$cur")
                return
            fi
            ;;
    esac
    mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
}
complete -F _bouhekictl bouhekictl
