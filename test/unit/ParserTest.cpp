#include "rbfc/Frontend/Lexer.h"
#include <gtest/gtest.h>
TEST(Parser, Placeholder) { EXPECT_EQ(rbfc::Lexer("").next().kind, rbfc::TokenKind::EndOfFile); }
