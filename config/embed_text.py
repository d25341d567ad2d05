#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Write a C++ header that holds a text file as a raw string literal.

    embed_text.py INPUT OUTPUT NAME [--namespace NS]

declares `inline constexpr char NAME[] = R"vubini(...)vubini";` with INPUT's text, in namespace NS
when given. Fails if the text holds the raw string's terminator.
"""

import argparse
import os
import sys

DELIMITER = 'vubini'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('input', help='the text file to embed')
    parser.add_argument('output', help='the C++ header to write')
    parser.add_argument('name', help='the name of the char array')
    parser.add_argument('--namespace', help='the C++ namespace to declare it in')
    args = parser.parse_args()

    with open(args.input, encoding='utf-8') as f:
        text = f.read()
    terminator = ')' + DELIMITER + '"'
    if terminator in text:
        sys.exit(f'{args.input}: holds {terminator}, which would end the raw string: '
                 'change the delimiter in embed_text.py')
    if '\0' in text:
        sys.exit(f'{args.input}: holds a NUL character')

    lines = [
        '/* SPDX-License-Identifier: Apache-2.0 */',
        f'/* Generated from {os.path.basename(args.input)} by embed_text.py: do not edit. */',
        '#pragma once',
        '',
    ]
    if args.namespace:
        lines += [f'namespace {args.namespace} {{', '']
    lines.append(f'inline constexpr char {args.name}[] = R"{DELIMITER}({text}){DELIMITER}";')
    if args.namespace:
        lines += ['', f'}} /* namespace {args.namespace} */']

    with open(args.output, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
