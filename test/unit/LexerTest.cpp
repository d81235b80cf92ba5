#include "rbfc/Frontend/Lexer.h"
#include <gtest/gtest.h>
TEST(Lexer, EndOfFile) { EXPECT_EQ(rbfc::Lexer("").next().kind, rbfc::TokenKind::EndOfFile); }
